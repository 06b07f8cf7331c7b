import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import {
  IsBoolean,
  IsDefined,
  IsInt,
  IsNotEmpty,
  IsObject,
  IsOptional,
  IsString,
  Max,
  MaxLength,
  Min,
  ValidateNested,
} from 'class-validator';

/** What agents keep of a project's packages. */
export class RetentionDto {
  /** Installation folders of a package an agent keeps after a success, the one in use among them. */
  @ApiPropertyOptional({ type: Number, minimum: 1, maximum: 1000, default: 3 })
  @IsOptional()
  @IsInt({ message: 'keepReleases must be a whole number' })
  @Min(1, { message: 'keepReleases must be at least 1 (the installation in use is always kept)' })
  @Max(1000, { message: 'keepReleases must be at most 1000' })
  keepReleases?: number;
}

export class CreateProjectDto {
  @ApiProperty({ type: String })
  @IsString()
  @IsNotEmpty()
  @MaxLength(100)
  name: string;
  @ApiPropertyOptional({ type: String })
  @IsOptional()
  @IsString()
  @MaxLength(2000)
  description?: string;
  @ApiPropertyOptional({ type: Number })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(7 * 86400)
  defaultTimeoutSeconds?: number;
  @ApiPropertyOptional({ type: Boolean })
  @IsOptional()
  @IsBoolean()
  allowConcurrentOnMachines?: boolean;
  /** A machine arriving in an environment gets the environment's last successful release (target triggers). */
  @ApiPropertyOptional({ type: Boolean })
  @IsOptional()
  @IsBoolean()
  autoDeployNewMachines?: boolean;
  /** A lifecycle's id or name; null removes it (every environment allowed). */
  @ApiPropertyOptional({ type: String, nullable: true, description: "a lifecycle's id or name; null removes it" })
  @IsOptional()
  @IsString()
  @MaxLength(100)
  lifecycleId?: string | null;
}

export class UpdateProjectDto {
  @ApiPropertyOptional({ type: String })
  @IsOptional()
  @IsString()
  @IsNotEmpty()
  @MaxLength(100)
  name?: string;
  @ApiPropertyOptional({ type: String })
  @IsOptional()
  @IsString()
  @MaxLength(2000)
  description?: string;
  /** null removes the default. */
  @ApiPropertyOptional({ type: Number })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(7 * 86400)
  defaultTimeoutSeconds?: number | null;
  /** Let this project's deployments run on machines busy with another deployment (off by default). */
  @ApiPropertyOptional({ type: Boolean })
  @IsOptional()
  @IsBoolean()
  allowConcurrentOnMachines?: boolean;
  /** A machine arriving in an environment gets the environment's last successful release (target triggers). */
  @ApiPropertyOptional({ type: Boolean })
  @IsOptional()
  @IsBoolean()
  autoDeployNewMachines?: boolean;
  /** A lifecycle's id or name; null removes it (every environment allowed). */
  @ApiPropertyOptional({ type: String, nullable: true, description: "a lifecycle's id or name; null removes it" })
  @IsOptional()
  @IsString()
  @MaxLength(100)
  lifecycleId?: string | null;

  @ApiPropertyOptional({ type: RetentionDto })
  @IsOptional()
  @IsObject({ message: 'retention must be an object like {"keepReleases": 3}' })
  @ValidateNested()
  @Type(() => RetentionDto)
  retention?: RetentionDto;
}

export class PutVariablesDto {
  /** Validated by the shared variables model, which names the offending field (variables[2].name ...). */
  @ApiProperty({ type: 'object', additionalProperties: true })
  @IsDefined({ message: 'variables must be a list of variables' })
  variables: unknown;
  @ApiPropertyOptional({ type: Number })
  @IsOptional()
  @IsInt()
  @Min(0)
  version?: number;
}

export class PutProcessDto {
  @ApiProperty({ type: Number })
  @IsInt({ message: 'version must be the version you edited (an integer)' })
  @Min(0)
  version: number;
  /** Validated by the shared process model, which names the offending field (steps[1].windowSize ...). */
  @ApiProperty({ type: 'object', additionalProperties: true })
  @IsDefined({ message: 'steps must be a list of steps' })
  steps: unknown;
}

export class CreateChannelDto {
  @ApiProperty({ type: String })
  @IsString()
  @IsNotEmpty()
  @MaxLength(100)
  name: string;
  /** Its own lifecycle (id or name); left out or null: it follows the project's. */
  @ApiPropertyOptional({ type: String, nullable: true, description: "a lifecycle's id or name; null: the project's" })
  @IsOptional()
  @IsString()
  @MaxLength(100)
  lifecycleId?: string | null;
}

/** What PATCH changes; a field left out keeps its value. */
export class UpdateChannelDto {
  @ApiPropertyOptional({ type: String })
  @IsOptional()
  @IsString()
  @IsNotEmpty()
  @MaxLength(100)
  name?: string;
  /** Its own lifecycle (id or name); null: it follows the project's. */
  @ApiPropertyOptional({ type: String, nullable: true, description: "a lifecycle's id or name; null: the project's" })
  @IsOptional()
  @IsString()
  @MaxLength(100)
  lifecycleId?: string | null;
}
