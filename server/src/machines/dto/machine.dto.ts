import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import {
  ArrayMaxSize,
  IsArray,
  IsBoolean,
  IsInt,
  IsNotEmpty,
  IsOptional,
  IsString,
  Matches,
  Max,
  MaxLength,
  Min,
  ValidateIf,
} from 'class-validator';
import { IsLabels, RawObject } from '../../common/validation.js';

export const ROLE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

export class CreateTokenDto {
  @ApiProperty({ type: [String] })
  @IsArray()
  @ArrayMaxSize(100)
  @IsString({ each: true })
  environmentIds: string[];
  @ApiPropertyOptional({ type: [String] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(100)
  @Matches(ROLE_RE, { each: true, message: 'roles must be names of letters, digits, ".", "_" or "-"' })
  roles?: string[];
  @ApiPropertyOptional({ type: Number })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(30 * 86400)
  expiresInSeconds?: number;
  @ApiPropertyOptional({ type: Number })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(100_000)
  maxUses?: number;
}

export class RegisterDto {
  @ApiProperty({ type: String })
  @IsString()
  @IsNotEmpty()
  @MaxLength(400)
  token: string;
  @ApiProperty({ type: String })
  @IsString()
  @Matches(NAME_RE, { message: 'name must be letters, digits, ".", "_" or "-" (at most 100)' })
  name: string;
  @ApiPropertyOptional({ type: [String] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(100)
  @Matches(ROLE_RE, { each: true, message: 'roles must be names of letters, digits, ".", "_" or "-"' })
  roles?: string[];
  @ApiPropertyOptional({ type: [String] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(100)
  @IsString({ each: true })
  environmentIds?: string[];
  /** The machine's labels; none given = no labels. */
  @ApiPropertyOptional({
    type: 'object',
    additionalProperties: { type: 'string' },
    description: 'topology labels like {"zone": "a"}: at most 50, names and values of letters, digits, ".", "_", "-"',
  })
  @ValidateIf((o: { labels?: unknown }) => o.labels !== undefined)
  @RawObject()
  @IsLabels()
  labels?: Record<string, string>;
  @ApiProperty({ type: String })
  @IsString()
  @IsNotEmpty()
  @MaxLength(20_000)
  csr: string;
  @ApiPropertyOptional({ type: String })
  @IsOptional()
  @IsString()
  @MaxLength(50)
  agentVersion?: string;
}

export class UpdateMachineDto {
  @ApiPropertyOptional({ type: [String] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(100)
  @Matches(ROLE_RE, { each: true, message: 'roles must be names of letters, digits, ".", "_" or "-"' })
  roles?: string[];
  @ApiPropertyOptional({ type: [String] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(100)
  @IsString({ each: true })
  environmentIds?: string[];
  @ApiPropertyOptional({ type: Boolean })
  @IsOptional()
  @IsBoolean()
  disabled?: boolean;
  /** Replaces the machine's labels (`{}` clears them); `null` is refused, as any other value that is not a map. */
  @ApiPropertyOptional({
    type: 'object',
    additionalProperties: { type: 'string' },
    description: 'topology labels like {"zone": "a"}: at most 50, names and values of letters, digits, ".", "_", "-"',
  })
  @ValidateIf((o: { labels?: unknown }) => o.labels !== undefined)
  @RawObject()
  @IsLabels()
  labels?: Record<string, string>;
}
