import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { ArrayMaxSize, IsArray, IsIn, IsOptional, IsString, Matches, MaxLength } from 'class-validator';
import { API_KEY_ROLES, type ApiKeyRole } from '#shared/api/types.js';

export class CreateApiKeyDto {
  @ApiProperty({ type: String, description: 'who or what uses the key (shown as who answered an interruption)' })
  @IsString()
  @Matches(/^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,99}$/, {
    message: 'name must be letters, digits, spaces, ".", "_", "@" or "-" (at most 100)',
  })
  name: string;

  @ApiPropertyOptional({
    enum: API_KEY_ROLES,
    description: 'what the key may do; without it, admin (as every key made before keys had roles)',
  })
  @IsOptional()
  @IsIn(API_KEY_ROLES, { message: `role must be one of ${API_KEY_ROLES.join(', ')}` })
  role?: ApiKeyRole;

  @ApiPropertyOptional({
    type: [String],
    description: 'environments (ids or names) the key is limited to; absent or null: all',
  })
  @IsOptional()
  @IsArray({ message: 'environmentIds must be a list of environment ids' })
  @ArrayMaxSize(1_000)
  @IsString({ each: true, message: 'environmentIds must be a list of environment ids' })
  @MaxLength(200, { each: true })
  environmentIds?: string[] | null;

  @ApiPropertyOptional({
    type: [String],
    description: 'projects (ids, slugs or names) the key is limited to; absent or null: all',
  })
  @IsOptional()
  @IsArray({ message: 'projectIds must be a list of project ids' })
  @ArrayMaxSize(1_000)
  @IsString({ each: true, message: 'projectIds must be a list of project ids' })
  @MaxLength(200, { each: true })
  projectIds?: string[] | null;
}
